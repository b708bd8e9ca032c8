/** A template's outputs: the JSON object it writes to /state/outputs.json (docs/template-contract.md). */
export const OUTPUTS_FILE = 'outputs.json';
export const MAX_OUTPUTS_BYTES = 1024 * 1024;

/** The outputs in outputs.json's text, or why there are none (a pod-runner sends the file's bytes to be parsed here). */
export function parseOutputs(text: string): { outputs?: Record<string, unknown>; warnings: string[] } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { warnings: [`${OUTPUTS_FILE} is not valid JSON (${(err as Error).message}); outputs ignored`] };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { warnings: [`${OUTPUTS_FILE} must hold a JSON object; outputs ignored`] };
  }
  return { outputs: parsed as Record<string, unknown>, warnings: [] };
}
