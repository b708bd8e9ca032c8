import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../core/config.js';

describe('loadConfig', () => {
  it('has safe local defaults with an empty environment', () => {
    const config = loadConfig({});
    assert.equal(config.temporal.address, '127.0.0.1:7233');
    assert.equal(config.api.host, '127.0.0.1');
    assert.equal(config.node.id, 'local');
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.kubernetes.enabled, false);
    assert.equal(config.dataDir, path.resolve('.gg-data'));
  });

  it('parses booleans strictly instead of treating any string as true', () => {
    assert.equal(loadConfig({ GLIDERGUN_KUBERNETES: 'false' }).kubernetes.enabled, false);
    assert.equal(loadConfig({ GLIDERGUN_KUBERNETES: 'true', GLIDERGUN_KUBERNETES_RUNNER_IMAGE: 'r/pod-runner:1' }).kubernetes.enabled, true);
    assert.throws(() => loadConfig({ GLIDERGUN_KUBERNETES: 'maybe' }), ConfigError);
    assert.throws(() => loadConfig({ GLIDERGUN_KUBERNETES: 'true' }), /GLIDERGUN_KUBERNETES_RUNNER_IMAGE: required/);
  });

  it('lists every problem at once', () => {
    try {
      loadConfig({ GLIDERGUN_API_PORT: 'eighty', GLIDERGUN_NODE_ID: 'Not_A_Name', DATABASE_URL: 'nope' });
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems.map((p) => p.split(':')[0]).sort(), ['DATABASE_URL', 'GLIDERGUN_API_PORT', 'GLIDERGUN_NODE_ID']);
    }
  });

  it('treats empty variables as unset', () => {
    assert.equal(loadConfig({ DATABASE_URL: '' }).databaseUrl, undefined);
  });
});

describe('effectiveLimits', () => {
  const defaults = { timeoutSeconds: 3600, maxTimeoutSeconds: 7200 };
  it('takes the deployment, then the template version, then the installation default', async () => {
    const { effectiveLimits } = await import('../../core/domain.js');
    assert.deepEqual(effectiveLimits({}, {}, defaults), { timeoutSeconds: 3600, cpus: undefined, memoryMb: undefined });
    assert.deepEqual(effectiveLimits({}, { timeoutSeconds: 60, cpus: 1 }, defaults), { timeoutSeconds: 60, cpus: 1, memoryMb: undefined });
    assert.deepEqual(effectiveLimits({ timeoutSeconds: 30, memoryMb: 64 }, { timeoutSeconds: 60, cpus: 1 }, defaults), {
      timeoutSeconds: 30,
      cpus: 1,
      memoryMb: 64,
    });
  });
  it('never exceeds the maximum, even for versions made before the maximum was lowered', async () => {
    const { effectiveLimits } = await import('../../core/domain.js');
    assert.equal(effectiveLimits({}, { timeoutSeconds: 99_999 }, defaults).timeoutSeconds, 7200);
  });
});
