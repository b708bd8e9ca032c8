#!/bin/sh
# The "shell" template type: runs the template's /template/main.sh with the action (docs/api.md has an example).
set -eu
if [ ! -f /template/main.sh ]; then
  echo "shell type: /template/main.sh is missing: a template of this type must have one" >&2
  exit 2
fi
echo "shell type: running /template/main.sh $*"
exec sh /template/main.sh "$@"
