import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../core/config.js';
import { imageRegistryHost, parseDockerConfig, RegistryCredentials } from '../../core/registry-credentials.js';

describe('registry credentials', () => {
  it('reads both forms of a Docker config file, keyed by the host images name', () => {
    const parsed = parseDockerConfig(
      JSON.stringify({
        auths: {
          'registry.example:5000': { auth: Buffer.from('ci:pa:ss').toString('base64') },
          'https://Other.Example/v1/': { username: 'bot', password: 'x' },
          'https://index.docker.io/v1/': { auth: Buffer.from('hub:y').toString('base64') },
        },
      }),
    );
    assert.deepEqual(parsed, [
      { username: 'ci', password: 'pa:ss', serveraddress: 'registry.example:5000' },
      { username: 'bot', password: 'x', serveraddress: 'other.example' },
      { username: 'hub', password: 'y', serveraddress: 'docker.io' },
    ]);
    const creds = new RegistryCredentials(parsed);
    assert.equal(creds.for(imageRegistryHost('registry.example:5000/team/app:1'))?.username, 'ci');
    assert.equal(creds.for(imageRegistryHost('busybox:1'))?.username, 'hub', 'a short name is Docker Hub');
    assert.equal(creds.for('elsewhere.example'), undefined);
  });

  it('refuses what it cannot use, naming the entry', () => {
    assert.throws(() => parseDockerConfig('{'), /not JSON/);
    assert.throws(() => parseDockerConfig('{"credsStore": "desktop"}'), /no "auths" object/);
    assert.throws(() => parseDockerConfig('{"auths": {"r.example": {"identitytoken": "t"}}}'), /auths\["r.example"\] has neither "auth" nor "username" and "password"/);
    assert.throws(() => parseDockerConfig(`{"auths": {"r.example": {"auth": "${Buffer.from('nocolon').toString('base64')}"}}}`), /not base64 of user:password/);
  });

  it('comes from the build registry\'s settings first, then GLIDERGUN_REGISTRY_AUTH_FILE; a bad file stops the start', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'gg-creds-'));
    const file = path.join(dir, 'config.json');
    await writeFile(file, JSON.stringify({ auths: { 'reg.example': { username: 'file', password: 'f' }, 'pull.example': { username: 'puller', password: 'p' } } }));
    const config = loadConfig({
      GLIDERGUN_REGISTRY: 'reg.example/templates',
      GLIDERGUN_REGISTRY_USERNAME: 'builder',
      GLIDERGUN_REGISTRY_PASSWORD: 'b',
      GLIDERGUN_REGISTRY_AUTH_FILE: file,
      GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS: 'regcred, other-cred',
    });
    const creds = new RegistryCredentials(config.registries.credentials);
    assert.equal(creds.for('reg.example')?.username, 'builder');
    assert.equal(creds.for('pull.example')?.username, 'puller');
    assert.deepEqual(config.kubernetes.imagePullSecrets, ['regcred', 'other-cred']);

    await writeFile(file, '{"auths": 3}');
    assert.throws(() => loadConfig({ GLIDERGUN_REGISTRY_AUTH_FILE: file }), (err: ConfigError) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /GLIDERGUN_REGISTRY_AUTH_FILE: .*config\.json: no "auths" object/);
      return true;
    });
    assert.throws(() => loadConfig({ GLIDERGUN_REGISTRY_AUTH_FILE: path.join(dir, 'missing.json') }), /GLIDERGUN_REGISTRY_AUTH_FILE: .*ENOENT/);
    assert.throws(() => loadConfig({ GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS: 'Bad_Name' }), /GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS: must be a comma-separated list of Secret names/);
  });
});
