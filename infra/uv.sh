# Sourced by .ci/run and infra/*.sh: sets UV to a uv of the pinned version (installs it into .venv-uv once).
# uv resolves and installs the locked environment in a fraction of pip's time; pip stays the users' installer.
UV_VERSION=0.13.9
UV=.venv-uv/bin/uv
if [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  rm -rf .venv-uv
  python3 -m venv .venv-uv
  .venv-uv/bin/pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
