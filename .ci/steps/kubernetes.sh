#!/usr/bin/env bash
# Kubernetes manifests (issue #22 item 4): kubectl to render deploy/kubernetes with its built-in
# kustomize; test/unit/kubernetes-manifests.test.ts checks the rendering against the code.
# Source it from .ci/run before the tests (`source .ci/steps/kubernetes.sh`): it exports
# KUBECTL_REQUIRED=1 (a missing kubectl then fails the test instead of skipping it) and KUBECTL.
# Debian 12's kubernetes-client is kubectl 1.20, whose kustomize is old: the base uses only
# fields it understands, and rendering with it is the check that stays true.
set -euo pipefail

if ! dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q 'install ok installed'; then
  apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; then
    # Another package already owns /usr/bin/kubectl (e.g. Google Cloud SDK's kubectl): unpack
    # Debian's beside it instead of replacing it.
    # apt-get downloaded the package before dpkg refused it.
    deb=$(ls -t /var/cache/apt/archives/kubernetes-client_*.deb | head -1)
    mkdir -p /opt/kubernetes-client
    dpkg -x "$deb" /opt/kubernetes-client
    export KUBECTL=/opt/kubernetes-client/usr/bin/kubectl
  fi
fi
export KUBECTL="${KUBECTL:-kubectl}"
export KUBECTL_REQUIRED=1
"$KUBECTL" version --client
"$KUBECTL" kustomize deploy/kubernetes >/dev/null
echo "deploy/kubernetes renders with $KUBECTL"
