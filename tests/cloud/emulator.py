"""A Google Cloud Storage emulator on localhost, and the environment that points the libraries at it.

The emulator is `gcp-storage-emulator` (pure Python, in memory). What talks
to it, and how each library is pointed there:

- etils epath (metrics, TensorBoard, the lock, checkpoint metadata, tfds's
  own file operations): through fsspec's `gcsfs`, which honours
  `STORAGE_EMULATOR_HOST`. `EPATH_USE_TF=false` makes epath use fsspec for
  gs:// instead of `tf.io.gfile`.
- tensorstore (Orbax's arrays): `TENSORSTORE_GCS_HTTP_URL`, with the fixed
  token `GOOGLE_AUTH_TOKEN_FOR_TESTING` instead of real credentials.
- `tf.io.gfile` and tf.data cannot be pointed at it: TensorFlow's GCS file
  system has storage.googleapis.com built in and no endpoint setting. See
  docs/multihost.md ("Object stores").

Two gaps of the emulator are filled here: it lacks the `moveTo` call gcsfs
tries first for a rename (gcsfs then retries for about 30 s before copying),
added as the copy and delete gcsfs falls back to; and its media downloads
lack the `x-goog-generation` header that GCS sends and tensorstore reads
(OCDBT's manifest reads fail without it). It ignores generation
preconditions, which is harmless here: each process writes its own OCDBT
database.
"""

import contextlib
import pathlib
import subprocess
import sys
import time
import urllib.request

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.handlers import objects

from tests import ports

BUCKET = 'se-flax-test'
REPO = pathlib.Path(__file__).resolve().parents[2]


def _move(request, response, storage, *unused_args, **unused_kwargs):
  # pylint: disable=protected-access
  bucket, source, dest = (request.params[k] for k in ('bucket_name', 'object_id', 'dest_object_id'))
  try:
    response.json(objects._copy(request.base_url, storage, bucket, source, bucket, dest))
  except objects.NotFound:
    response.status = objects.HTTPStatus.NOT_FOUND
    return
  objects._delete(storage, bucket, source)


_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if int(response.status) in (200, 206):
    obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
    response['x-goog-generation'] = obj['generation']
    response['x-goog-metageneration'] = obj['metageneration']


def _patch():
  """Adds the moveTo route and the generation header (see the module docstring)."""
  objects.download = _download_with_generation  # `objects.get` calls it for ?alt=media
  handlers = tuple((regex, {
      m: _download_with_generation if h is _download else h for m, h in methods.items()
  }) for regex, methods in emulator_server.HANDLERS)
  route = (r'^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/'
           r'(?P<dest_object_id>.*[^/]+)$', {
               emulator_server.POST: _move
           })
  emulator_server.HANDLERS = (route,) + handlers


def environment(port: int) -> dict[str, str]:
  """The variables that point gcsfs (so epath) and tensorstore at the emulator on `port`."""
  url = f'http://localhost:{port}'
  return {
      'STORAGE_EMULATOR_HOST': url,
      'TENSORSTORE_GCS_HTTP_URL': url,
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
      'EPATH_USE_TF': 'false',
      'FSSPEC_GCS_TOKEN': 'anon',
      # gcsfs's bucket-type probe asks a gRPC service the emulator does not have.
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
  }


def serve(port: int, bucket: str = BUCKET) -> None:
  """Runs an in-memory emulator holding `bucket` on `port` until the process is killed."""
  _patch()
  emulator_server.create_server('localhost', port, in_memory=True, default_bucket=bucket).run()


def _ready(port: int) -> bool:
  try:
    with urllib.request.urlopen(f'http://localhost:{port}/', timeout=1):
      return True
  except OSError:
    return False


@contextlib.contextmanager
def running(log_path, bucket: str = BUCKET):
  """An emulator in a subprocess (its requests logged to `log_path`); yields its environment.

  A process of its own keeps its request handling off the test's interpreter.
  """

  def start(port):
    with open(log_path, 'ab') as log:
      proc = subprocess.Popen([sys.executable, '-m', 'tests.cloud.emulator',
                               str(port), bucket], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not _ready(port):
      if proc.poll() is not None:
        if ports.port_taken(pathlib.Path(log_path).read_text(errors='replace')):
          raise ports.PortTaken(str(port))
        raise AssertionError(f'the storage emulator exited with {proc.returncode}; see {log_path}')
      if time.monotonic() > deadline:
        ports.kill([proc])
        raise AssertionError(f'the storage emulator did not answer in 30 s; see {log_path}')
      time.sleep(0.1)
    return port, proc

  port, proc = ports.on_free_port(start)
  try:
    yield environment(port)
  finally:
    ports.kill([proc])


if __name__ == '__main__':
  serve(int(sys.argv[1]), *sys.argv[2:])
