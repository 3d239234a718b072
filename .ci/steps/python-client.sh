# shellcheck shell=bash
# The Python client (clients/python): Debian's grpcio and protobuf for its tests
# (test/integration/client-python.test.ts), protoc and grpc_python_plugin to check that its
# generated code is current. Source it from .ci/run before `npm test`:
#   source .ci/steps/python-client.sh
# It exports PYTHON_CLIENT_REQUIRED=1 (a missing python3-grpcio then fails the tests instead of
# skipping them) and PYTHON (Debian's interpreter, which has the apt-installed modules even
# when another python3, such as pyenv's, comes first on PATH).
if ! /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null || ! command -v grpc_python_plugin >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc >/dev/null
fi
/usr/bin/python3 -c 'import grpc, google.protobuf; print("python3-grpcio", grpc.__version__, "protobuf", google.protobuf.__version__)'
bash clients/python/generate.sh --check
export PYTHON=/usr/bin/python3
export PYTHON_CLIENT_REQUIRED=1
