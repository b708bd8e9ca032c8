import { readFile } from 'node:fs/promises';
import { loadYaml } from '@kubernetes/client-node';
import { z } from 'zod';

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** `[prefix/]name` as Kubernetes label and annotation keys are. */
const QUALIFIED_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const OWN_PREFIX = 'glider-gun.io/';

const Keys = z.record(z.string().regex(QUALIFIED_KEY, 'must be a Kubernetes key ([prefix/]name)'), z.string()).superRefine((keys, ctx) => {
  for (const key of Object.keys(keys)) {
    if (key.startsWith(OWN_PREFIX)) ctx.addIssue({ code: 'custom', path: [key], message: `${OWN_PREFIX} keys are Glider Gun's own` });
  }
});

/**
 * What an operator may add to every run's pod (GLIDERGUN_KUBERNETES_POD_TEMPLATE): where it may run, as
 * whom, and how it is labelled. Only these fields: the rest of the pod is the template contract's (volumes,
 * the runner, restart policy, the grace period), and a field we do not know is refused rather than ignored.
 * Affinity and the security context are passed as written; the API server checks them when the Job is made.
 */
export const PodTemplateSchema = z.strictObject({
  metadata: z.strictObject({ labels: Keys.optional(), annotations: Keys.optional() }).optional(),
  spec: z
    .strictObject({
      /** For cloud credentials through workload identity, or a Vault login with the account's token. */
      serviceAccountName: z.string().regex(DNS_SUBDOMAIN).optional(),
      automountServiceAccountToken: z.boolean().optional(),
      nodeSelector: z.record(z.string().regex(QUALIFIED_KEY), z.string()).optional(),
      tolerations: z
        .array(
          z.strictObject({
            key: z.string().optional(),
            operator: z.enum(['Exists', 'Equal']).optional(),
            value: z.string().optional(),
            effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
            tolerationSeconds: z.number().int().optional(),
          }),
        )
        .optional(),
      affinity: z.record(z.string(), z.unknown()).optional(),
      priorityClassName: z.string().regex(DNS_SUBDOMAIN).optional(),
      runtimeClassName: z.string().regex(DNS_SUBDOMAIN).optional(),
      securityContext: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
});

export type PodTemplate = z.infer<typeof PodTemplateSchema>;

/** Reads and checks a pod template file (YAML or JSON); the error names the file and every problem. */
export async function loadPodTemplate(file: string): Promise<PodTemplate> {
  let parsed: unknown;
  try {
    const text = await readFile(file, 'utf8');
    parsed = text.trim() ? loadYaml(text) : {};
  } catch (err) {
    throw new Error(`GLIDERGUN_KUBERNETES_POD_TEMPLATE: ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const result = PodTemplateSchema.safeParse(parsed ?? {});
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`);
    throw new Error(`GLIDERGUN_KUBERNETES_POD_TEMPLATE: ${file}: ${problems.join('; ')}`);
  }
  return result.data;
}
