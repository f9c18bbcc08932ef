"""`make test` keeps each xdist_group on one worker, as the suite's shared runs assume.

Two-process runs (tests/integration/test_multihost.py) and shared trained runs
(tests/analysis/test_analyze_mode.py) rely on their group running in turn on
one worker. pytest-xdist marks a grouped test by suffixing its node id with
'@group' and schedules by that suffix; with a pytest whose node ids it cannot
rewrite, the suffix is missing and groups spread over workers silently.
"""

import pytest

GROUP = 'xdist_group_probe'


@pytest.mark.xdist_group(GROUP)
def test_a_grouped_test_carries_its_group_under_loadgroup(request):
  # A worker of `-n N --dist loadgroup` has this option set (xdist's remote set-up).
  if not getattr(request.config.option, 'loadgroup', False):
    pytest.skip('run with -n N --dist loadgroup, as make test does')
  assert request.node.nodeid.endswith(f'@{GROUP}'), request.node.nodeid
