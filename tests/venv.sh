# Sourced by tests/run.sh and examples/serve.sh: the project's own virtual environment, so
# both work with Debian's and Ubuntu's python3, whose pip refuses to install outside one
# (PEP 668 "externally-managed-environment").  $SPICESERVER_VENV picks another place.

# Prints the environment's python, creating the environment first if needed (and installing
# Debian's python3-venv when python3 cannot make one without it).
project_python() {
    local venv=${SPICESERVER_VENV:-.venv}
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            local sudo=""
            [ "$(id -u)" -eq 0 ] || sudo="sudo"
            echo "installing Debian's python3-venv (python3 cannot make a venv without it)" >&2
            $sudo apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
                python3-venv >/dev/null
            python3 -m venv "$venv" >&2
        fi
        "$venv/bin/python" -m pip install -q --upgrade pip >&2
    fi
    echo "$venv/bin/python"
}
