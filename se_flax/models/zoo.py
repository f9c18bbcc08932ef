"""The paper's other backbones (Tables 2 and 3), by name, in registry.PRESETS' shape.

`PRESETS[name] = (cls, kwargs, with_se)`: each plain network has an `se_`
twin built from the same layout, whose SE blocks the config's `SESpec` sets.
The classes' defaults are the published networks, so most kwargs are empty.
`INPUT_SIZES` holds the crop each network's published cost refers to.
"""

from se_flax.models.inception import BNInception
from se_flax.models.inception import InceptionResNetV2
from se_flax.models.mobile import MobileNetV1
from se_flax.models.mobile import ShuffleNetV1
from se_flax.models.vgg import VGG

_PLAIN = {
    'vgg16_bn': (VGG, {}),
    'bn_inception': (BNInception, {}),
    'inception_resnet_v2': (InceptionResNetV2, {}),
    'mobilenet_v1': (MobileNetV1, {}),
    'shufflenet_v1_g3': (ShuffleNetV1, dict(groups=3)),
}

PRESETS = {
    f'{prefix}{name}': (cls, kwargs, with_se) for name, (cls, kwargs) in _PLAIN.items()
    for prefix, with_se in (('', False), ('se_', True))
}

# The paper's single-crop sizes (Tables 2, 3); Inception-ResNet-v2 takes at least 75 pixels.
INPUT_SIZES = {name: 299 if 'inception_resnet' in name else 224 for name in PRESETS}
