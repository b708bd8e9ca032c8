/**
 * The template container contract (docs/template-contract.md), checked the same way on both execution
 * adapters: a Docker container on a node, and a Kubernetes Job in the test cluster. Everything goes through
 * the API, as a user would; the template images come from the test registry on both.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import { TEMPLATE_CONTAINER, runSelector } from '../../activities/execution/kubernetes/job-spec.js';
import { EXAMPLE_PARAMETERS, uniqueName, waitForRun, type RunBody } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { adminKubeConfig } from '../support/kubernetes.js';
import { pushToRegistry } from '../support/registry.js';
import { eventually, images, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

type Run = RunBody;

const SECRET = 's3cr3t-value-for-conformance';
const BURSTS = 12;
const FAST_LINES = 2000;

for (const target of ['docker', 'kubernetes'] as const) {
  const skip = target === 'kubernetes' ? noCluster : false;
  describe(`the template contract on ${target === 'docker' ? 'a Docker node' : 'Kubernetes (one Job per run)'}`, { skip }, () => {
    let sys: TestSystem;
    let example: string;
    let images_: { example: string; leaky: string; stubborn: string; interleaved: string; files: string; lingering: string };

    const targetBody = () => (target === 'docker' ? { kind: 'node', node: sys.nodeId } : { kind: 'cluster' });

    async function template(image: string, extra: Record<string, unknown> = {}): Promise<string> {
      const name = uniqueName('conformance');
      assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
      const v = await sys.call('POST', `/v1/templates/${name}/versions`, {
        image,
        tfVars: true,
        parameters: [...EXAMPLE_PARAMETERS, { name: 'api_key', type: 'string', required: false, sensitive: true }],
        ...extra,
      });
      assert.equal(v.status, 201, JSON.stringify(v.body));
      return name;
    }

    async function deployment(tpl: string, parameters: Record<string, unknown>, limits: Record<string, unknown> = {}): Promise<string> {
      const res = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: tpl }, parameters, target: targetBody(), limits });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.id;
    }

    async function start(id: string, action = 'deploy'): Promise<string> {
      const res = await sys.call<Run>('POST', `/v1/deployments/${id}/runs`, { action });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      return res.body.id;
    }

    const ended = (runId: string): Promise<Run> => waitForRun(sys.call, runId);

    async function log(runId: string, stream?: string): Promise<string> {
      const res = await fetch(`${sys.api.url}/v1/runs/${runId}/logs${stream ? `?stream=${encodeURIComponent(stream)}` : ''}`, {
        headers: { authorization: `Bearer ${sys.tokens.admin}` },
      });
      return res.text();
    }

    /** Until the template's own process runs: the container (or pod) exists and the template has printed. */
    async function executing(runId: string): Promise<void> {
      await eventually('the template to print', async () => ((await log(runId, 'stdout')).includes('example template') ? true : undefined), 120_000);
    }

    before(async () => {
      sys = await startTestSystem(target === 'kubernetes' ? { nodeWorker: false, env: await kubernetesEnv() } : {});
      images_ = {
        example: await pushToRegistry(images.example),
        leaky: await pushToRegistry(await scriptImage(sys.docker, '#!/bin/sh\necho "the key is $(cat /secrets/template-secrets.json)"\necho "key on stderr: $TF_VAR_message" >&2\n')),
        // Marks the SIGTERM it gets, then goes on printing the time (the kernel's uptime, the same clock in
        // every container and pod) every 0.1 s until it is killed.
        stubborn: await pushToRegistry(
          await scriptImage(
            sys.docker,
            '#!/bin/sh\nnow() { read -r up _ < /proc/uptime; echo "$up"; }\ntrap \'echo "SIGTERM at $(now)"\' TERM\n' +
              'echo "example template stubborn"\necho kept > /state/kept\nwhile true; do echo "alive at $(now)"; sleep 0.1; done\n',
          ),
        ),
        // Bursts of one stream at a time, a quarter of a second apart (an order no reader can mistake), then
        // both streams alternating as fast as the shell writes (whose order within an instant no reader of two
        // pipes can know: only each stream's is checked), and a last line without a newline.
        interleaved: await pushToRegistry(
          await scriptImage(
            sys.docker,
            '#!/bin/sh\ni=0\nwhile [ $i -lt ' + BURSTS + ' ]; do\n' +
              '  j=0; while [ $j -lt 20 ]; do echo "out $i.$j"; j=$((j+1)); done; sleep 0.25\n' +
              '  j=0; while [ $j -lt 20 ]; do echo "err $i.$j" >&2; j=$((j+1)); done; sleep 0.25\n' +
              '  i=$((i+1))\ndone\n' +
              'i=0; while [ $i -lt ' + FAST_LINES + ' ]; do echo "fast-out $i"; echo "fast-err $i" >&2; i=$((i+1)); done\n' +
              "sleep 0.25; printf 'no trailing newline'\n",
          ),
        ),
        // deploy: leaves files with unusual modes and owners in /state the first time, and reports them
        // the second time; destroy: writes no outputs at all.
        files: await pushToRegistry(
          await scriptImage(
            sys.docker,
            '#!/bin/sh\nset -e\n[ "$1" = destroy ] && exit 0\n' +
              'if [ -e /state/made ]; then\n' +
              '  printf \'{"locked":"%s","owned":"%s","setuid":"%s","setgid":"%s","sticky":"%s","closed":"%s"}\' ' +
              '"$(stat -c %a /state/locked)" "$(stat -c %u:%g /state/owned)" "$(stat -c %a /state/setuid)" "$(stat -c %a /state/setgid)" "$(stat -c %a /state/sticky)" "$(stat -c %a /state/closed)" > /state/outputs.json\n' +
              'else\n' +
              '  echo x > /state/locked; chmod 000 /state/locked\n' +
              '  echo x > /state/owned; chown 1000:1001 /state/owned\n' +
              '  echo x > /state/setuid; chmod 4755 /state/setuid\n' +
              '  echo x > /state/setgid; chmod 2755 /state/setgid\n' +
              '  mkdir /state/sticky; chmod 1777 /state/sticky\n' +
              '  mkdir /state/closed; echo x > /state/closed/inside; chmod 000 /state/closed\n' +
              '  touch /state/made\n  echo \'{"first":true}\' > /state/outputs.json\nfi\n',
          ),
        ),
        // Prints its secret, then waits to be cancelled: its container's own log can be read meanwhile.
        lingering: await pushToRegistry(
          await scriptImage(sys.docker, '#!/bin/sh\necho "example template: the key is $(cat /secrets/template-secrets.json)"\nsleep 300\n'),
        ),
      };
      example = await template(images_.example);
    });
    after(async () => {
      await sys.stop();
    });

    it('gives the template its action, parameters file, environment and secrets file, and keeps its outputs and log', async () => {
      const id = await deployment(example, { message: 'hello', api_key: SECRET });
      const run = await ended(await start(id));
      assert.equal(run.status, 'succeeded', run.message ?? '');
      const out = run.outputs!;
      assert.equal(out.action, 'deploy');
      assert.equal(out.argv, 'deploy', 'the action is the only argument after the entrypoint');
      assert.deepEqual(out.parameters, { message: 'hello', exit_code: 0, sleep_seconds: 0 }, 'sensitive values stay out of template-parameters.json');
      assert.deepEqual(out.tfVars, { TF_VAR_message: 'hello', TF_VAR_exit_code: '0', TF_VAR_sleep_seconds: '0' });
      assert.deepEqual(out.env, { GLIDERGUN_CONTRACT_VERSION: '1', GLIDERGUN_ACTION: 'deploy', GLIDERGUN_DEPLOYMENT_ID: id, GLIDERGUN_RUN_ID: run.id });
      const secretsFile = `${JSON.stringify({ api_key: SECRET }, null, 2)}\n`;
      assert.equal(out.secretsSha256, createHash('sha256').update(secretsFile).digest('hex'), '/secrets/template-secrets.json as documented');
      const stdout = await log(run.id, 'stdout');
      assert.match(stdout, new RegExp(`example template: action=deploy deployment=${id} run=${run.id} contract=1`));
      assert.match(await log(run.id, 'file:history.log'), new RegExp(` deploy ${run.id}\\n$`), 'files written in /logs are kept');
      assert.ok(!(await log(run.id)).includes(SECRET));
    });

    it('restores /state from the previous run and archives it after each one', async () => {
      const id = await deployment(example, { message: 'twice' });
      const first = await ended(await start(id));
      assert.equal(first.status, 'succeeded', first.message ?? '');
      assert.equal(first.outputs?.runCount, 1);
      assert.equal(first.stateVersionFrom, null);
      assert.ok(first.stateVersion, 'archived');
      const second = await ended(await start(id, 'destroy'));
      assert.equal(second.status, 'succeeded', second.message ?? '');
      assert.equal(second.outputs?.runCount, 2, 'the second run saw the first run\'s /state');
      assert.equal(second.stateVersionFrom, first.stateVersion);
      assert.ok(second.stateVersion! > first.stateVersion);
      assert.equal((await sys.call<{ status: string }>('GET', `/v1/deployments/${id}`)).body.status, 'destroyed');
    });

    it('fails with reason exit-code and keeps the code and stderr when the template exits non-zero', async () => {
      const id = await deployment(example, { message: 'boom', exit_code: 3 });
      const run = await ended(await start(id));
      assert.equal(run.status, 'failed');
      assert.equal(run.reason, 'exit-code');
      assert.equal(run.exitCode, 3);
      assert.match(run.message ?? '', /exited with code 3/);
      assert.match(await log(run.id, 'stderr'), /failing on purpose with exit code 3/);
      assert.ok(run.stateVersion, '/state is archived after a failure too');
    });

    it('masks sensitive values in stdout and stderr', async () => {
      const tpl = await template(images_.leaky);
      const id = await deployment(tpl, { message: `msg-${SECRET}`, api_key: SECRET });
      const run = await ended(await start(id));
      assert.equal(run.status, 'succeeded', run.message ?? '');
      const all = await log(run.id);
      assert.ok(!all.includes(SECRET), all);
      assert.match(await log(run.id, 'stdout'), /"api_key": "\*\*\*"/);
      assert.match(await log(run.id, 'stderr'), /key on stderr: msg-\*\*\*/);
    });

    it('cancels a running template: SIGTERM, its log and /state kept, ended as cancelled', async () => {
      const id = await deployment(example, { message: 'long', sleep_seconds: 120 });
      const runId = await start(id);
      await executing(runId);
      const t0 = Date.now();
      assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
      const run = await ended(runId);
      assert.equal(run.status, 'cancelled', run.message ?? '');
      assert.ok(Date.now() - t0 < 30_000, `cancel took ${Date.now() - t0} ms`);
      assert.ok(run.stateVersion, '/state archived after a cancel');
      assert.match(await log(runId, 'stdout'), /example template: action=deploy/);
    });

    it('kills a template that ignores SIGTERM after the grace period, and still archives /state', async () => {
      const tpl = await template(images_.stubborn);
      const id = await deployment(tpl, { message: 'stubborn' });
      const runId = await start(id);
      await executing(runId);
      const t0 = Date.now();
      assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
      const run = await ended(runId);
      const took = Date.now() - t0;
      assert.equal(run.status, 'cancelled');
      const grace = sys.config.runs.stopGraceSeconds;
      const stdout = await log(runId, 'stdout');
      const terms = [...stdout.matchAll(/^SIGTERM at (\d+\.\d+)$/gm)].map((m) => Number(m[1]));
      assert.equal(terms.length, 1, `the template received SIGTERM once:\n${stdout}`);
      const alive = [...stdout.matchAll(/^alive at (\d+\.\d+)$/gm)].map((m) => Number(m[1]));
      const lastAlive = alive.at(-1)!;
      // It prints every 0.1 s until SIGKILL: the last print is at most one loop (0.1 s, 0.5 s on a loaded
      // machine) before the kill. A kill before the grace period is over leaves a shorter gap.
      assert.ok(lastAlive - terms[0]! >= grace - 0.5, `last alive ${(lastAlive - terms[0]!).toFixed(2)} s after SIGTERM: killed before the ${grace} s grace`);
      assert.ok(took >= grace * 1000, `stopped after ${took} ms: before the ${grace} s grace`);
      assert.ok(run.stateVersion);
      const archive = await fetch(`${sys.api.url}/v1/deployments/${id}/state-versions/${run.stateVersion}/archive`, {
        headers: { authorization: `Bearer ${sys.tokens.admin}` },
      });
      assert.equal(archive.status, 200);
    });

    it('stops a run at its timeout: failed with reason timeout, /state and log kept', async () => {
      const id = await deployment(example, { message: 'slow', sleep_seconds: 120 }, { timeoutSeconds: 4 });
      const run = await ended(await start(id));
      assert.equal(run.status, 'failed');
      assert.equal(run.reason, 'timeout');
      assert.match(run.message ?? '', /timeout of 4s/);
      assert.ok(run.stateVersion);
      assert.match(await log(run.id, 'stdout'), /example template/);
    });

    it('keeps the order in which the template wrote across stdout and stderr, with no line glued to another', { timeout: 180_000 }, async () => {
      const tpl = await template(images_.interleaved);
      const run = await ended(await start(await deployment(tpl, { message: 'interleaved' })));
      assert.equal(run.status, 'succeeded', run.message ?? '');
      const written: string[] = [];
      for (let i = 0; i < BURSTS; i++) {
        for (const stream of ['out', 'err']) for (let j = 0; j < 20; j++) written.push(`${stream} ${i}.${j}`);
      }
      const lines = (await log(run.id)).split('\n');
      assert.equal(lines.at(-1), 'no trailing newline', 'the last line the template wrote is the last of the combined view');
      const bursts = lines.filter((l) => /^(out|err) /.test(l));
      assert.deepEqual(bursts, written, 'bursts a quarter of a second apart come in the order they were written');
      const fast = lines.slice(0, -1).filter((l) => l.startsWith('fast-'));
      const glued = lines.slice(0, -1).filter((l) => !/^(out|err) \d+\.\d+$/.test(l) && !/^fast-(out|err) \d+$/.test(l));
      assert.deepEqual(glued, [], 'every line whole');
      for (const stream of ['out', 'err']) {
        const seen = fast.filter((l) => l.startsWith(`fast-${stream} `));
        assert.deepEqual(seen, Array.from({ length: FAST_LINES }, (_, i) => `fast-${stream} ${i}`), `fast-${stream}: each line once, in order`);
      }
      const stderr = await log(run.id, 'stderr');
      assert.equal(stderr, [...written.filter((l) => l.startsWith('err ')), ...Array.from({ length: FAST_LINES }, (_, i) => `fast-err ${i}`)].join('\n') + '\n', 'stderr alone, byte for byte');
    });

    it('keeps modes exactly (000 too) and owners across runs, strips setuid and setgid, and clears outputs.json before each run', async () => {
      const tpl = await template(images_.files);
      const id = await deployment(tpl, { message: 'files' });
      const first = await ended(await start(id));
      assert.equal(first.status, 'succeeded', first.message ?? '');
      assert.deepEqual(first.outputs, { first: true });
      const second = await ended(await start(id));
      assert.equal(second.status, 'succeeded', second.message ?? '');
      assert.deepEqual(second.outputs, { locked: '0', owned: '1000:1001', setuid: '755', setgid: '755', sticky: '1777', closed: '0' });
      const third = await ended(await start(id, 'destroy'));
      assert.equal(third.status, 'succeeded', third.message ?? '');
      assert.equal(third.outputs, null, 'a run that writes no outputs.json has none, whatever the one before wrote');
    });

    it('keeps sensitive values out of the container\'s own log (docker logs, kubectl logs)', async () => {
      const tpl = await template(images_.lingering);
      const runId = await start(await deployment(tpl, { message: 'lingering', api_key: SECRET }));
      await executing(runId);
      try {
        // The kubelet may still call the container initializing a moment after the runner has stored its first lines.
        const ownLog = await eventually('the container\'s own log to hold the line', async () => {
          const text = target === 'docker' ? await engineLog(runId) : await podLog(runId).catch(() => '');
          return text.includes('the key is') ? text : undefined;
        });
        assert.match(ownLog, /"api_key": "\*\*\*"/, 'the container\'s log holds the masked line');
        assert.ok(!ownLog.includes(SECRET), ownLog);
      } finally {
        assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
        assert.equal((await ended(runId)).status, 'cancelled');
      }
    });

    /** What the Docker engine keeps of the run's container output (its json-file log). */
    async function engineLog(runId: string): Promise<string> {
      return (await sys.docker.getContainer(`gg-${runId}`).logs({ stdout: true, stderr: true, follow: false })).toString('latin1');
    }

    /** What the kubelet keeps of the run's pod (what kubectl logs shows). */
    async function podLog(runId: string): Promise<string> {
      const core = adminKubeConfig().makeApiClient(CoreV1Api);
      const namespace = sys.config.kubernetes.namespace;
      const pod = await eventually('the run\'s pod', async () => (await core.listNamespacedPod({ namespace, labelSelector: runSelector(runId) })).items[0]);
      return core.readNamespacedPodLog({ name: pod.metadata!.name!, namespace, container: TEMPLATE_CONTAINER });
    }
  });
}
