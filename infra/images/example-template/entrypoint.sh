#!/bin/sh
# An example template that shows the Glider Gun container contract (docs/template-contract.md)
# with nothing but a POSIX shell. Its behaviour is driven by its parameters, which it reads as
# TF_VAR_* variables (the template version declares "tfVars": true):
#   message       printed and returned as an output
#   exit_code     the exit code of the run (default 0)
#   sleep_seconds how long to work before finishing (default 0)
# It never prints sensitive values; it reports the sha256 of /secrets/template-secrets.json instead.
set -eu

action="${1:?the action is the first argument}"
echo "example template: action=${action} deployment=${GLIDERGUN_DEPLOYMENT_ID} run=${GLIDERGUN_RUN_ID} contract=${GLIDERGUN_CONTRACT_VERSION}"
echo "parameters: $(cat /state/template-parameters.json)"

# State survives between runs of a deployment: count the runs of this deployment.
runs=$(cat /state/run-count 2>/dev/null || echo 0)
runs=$((runs + 1))
echo "${runs}" > /state/run-count
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ${action} ${GLIDERGUN_RUN_ID}" >> /logs/history.log

sleep "${TF_VAR_sleep_seconds:-0}"

# Outputs: a JSON object in /state/outputs.json. The parameters file is embedded as it is (it is JSON).
json_string() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
tf_vars=$(env | grep '^TF_VAR_' | sort | while IFS='=' read -r name value; do
  printf '"%s":"%s"\n' "${name}" "$(json_string "${value}")"
done | paste -sd, -)
printf '{"action":"%s","runCount":%s,"message":"%s","parameters":%s,"tfVars":{%s},"argv":"%s",' \
  "${action}" "${runs}" "$(json_string "${TF_VAR_message:-}")" "$(cat /state/template-parameters.json)" \
  "${tf_vars}" "$(json_string "$*")" > /state/outputs.json
# Sensitive values arrive only as a file on an in-memory mount; prove it was readable without echoing it.
secrets_sha=$(sha256sum /secrets/template-secrets.json 2>/dev/null | cut -d' ' -f1)
printf '"secretsSha256":"%s",' "${secrets_sha}" >> /state/outputs.json
printf '"env":{"GLIDERGUN_CONTRACT_VERSION":"%s","GLIDERGUN_ACTION":"%s","GLIDERGUN_DEPLOYMENT_ID":"%s","GLIDERGUN_RUN_ID":"%s"}}\n' \
  "${GLIDERGUN_CONTRACT_VERSION}" "${GLIDERGUN_ACTION}" "${GLIDERGUN_DEPLOYMENT_ID}" "${GLIDERGUN_RUN_ID}" >> /state/outputs.json

code="${TF_VAR_exit_code:-0}"
if [ "${code}" != 0 ]; then echo "failing on purpose with exit code ${code}" >&2; fi
exit "${code}"
