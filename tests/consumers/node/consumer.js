#!/usr/bin/env node
// Reads spiffe-bridge's outputs through the unmodified AWS SDK for JavaScript v3 and
// google-auth-library, configured only through their documented environment variables
// and files, and reports JSON lines on stdout. Never prints a secret: only fingerprints
// (sha256 hex of access key id + session token, or of the access token).
//
//   node consumer.js --mode MODE [--sts URL] [--check URL] [--file F] [--want N]
//                    [--timeout S] [--interval MS]
//
// AWS modes (each round: the STS client's own memoized credentials, then GetCallerIdentity
// at --sts, signed by the client with its provider):
//   aws-chain      fromNodeProviderChain()        (the default chain)
//   aws-ini        fromIni()                      (AWS_SHARED_CREDENTIALS_FILE + AWS_PROFILE)
//   aws-process    fromProcess()                  (credential_process in AWS_CONFIG_FILE)
//   aws-http       fromHttp()                     (AWS_CONTAINER_CREDENTIALS_FULL_URI + ..._TOKEN_FILE)
//   aws-container  fromContainerMetadata()
//   aws-imds       fromInstanceMetadata()         (AWS_EC2_METADATA_SERVICE_ENDPOINT)
// GCP modes (each round: client.getAccessToken(); the token is proven by a POST to
// --check, the dev emulator's generateIdToken, 200 only for a valid token it issued):
//   gcp-default    new GoogleAuth().getClient()   (GCE metadata, or GOOGLE_APPLICATION_CREDENTIALS)
//   gcp-json       new GoogleAuth({keyFilename: --file}).getClient()
//   gcp-token-file new OAuth2Client().setCredentials(JSON.parse(--file)), the file
//                  (gcp/<t>.json) read afresh each round
'use strict';

const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const providers = require('@aws-sdk/credential-providers');
const { STSClient, GetCallerIdentityCommand } = require('@aws-sdk/client-sts');
const fs = require('node:fs');
const { GoogleAuth, OAuth2Client } = require('google-auth-library');

const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';
const { values: opts } = parseArgs({
  options: {
    mode: { type: 'string' },
    sts: { type: 'string', default: '' },
    check: { type: 'string', default: '' },
    file: { type: 'string', default: '' },
    want: { type: 'string', default: '1' },
    timeout: { type: 'string', default: '30' },
    interval: { type: 'string', default: '500' },
  },
});
const want = Number(opts.want);
const deadline = Date.now() + Number(opts.timeout) * 1000;

const emit = (fields) => process.stdout.write(`${JSON.stringify(fields)}\n`);
const fingerprint = (...parts) => crypto.createHash('sha256').update(parts.join('')).digest('hex');
const stamp = (date) => (date instanceof Date && !Number.isNaN(date.getTime()) ? date.toISOString() : null);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const errorText = (e) => `${e && e.name ? `${e.name}: ` : ''}${e && e.message ? e.message : String(e)}`;

async function loop(round) {
  const seen = new Set();
  for (;;) {
    const [fp, fields] = await round();
    fields.t = new Date().toISOString();
    emit(fields);
    if (fp && !seen.has(fp)) {
      seen.add(fp);
      if (seen.size >= want) {
        emit({ event: 'done', distinct: seen.size });
        return 0;
      }
    }
    if (Date.now() > deadline) {
      emit({ event: 'timeout', distinct: seen.size });
      return 3;
    }
    await sleep(Number(opts.interval));
  }
}

const AWS_PROVIDERS = {
  'aws-chain': () => providers.fromNodeProviderChain(),
  'aws-ini': () => providers.fromIni(),
  'aws-process': () => providers.fromProcess(),
  'aws-http': () => providers.fromHttp(),
  'aws-container': () => providers.fromContainerMetadata(),
  'aws-imds': () => providers.fromInstanceMetadata(),
};

async function runAws(makeProvider) {
  const client = new STSClient({ region: 'us-east-1', endpoint: opts.sts, credentials: makeProvider() });
  return loop(async () => {
    let creds;
    try {
      // The client's own memoized identity provider: what it signs the next call with.
      creds = await client.config.credentials();
    } catch (e) {
      return [null, { event: 'error', stage: 'credentials', error: errorText(e) }];
    }
    const fp = fingerprint(creds.accessKeyId, creds.sessionToken || '');
    const fields = { event: 'credential', fp, expires: stamp(creds.expiration) };
    try {
      const out = await client.send(new GetCallerIdentityCommand({}));
      fields.call = 'ok';
      fields.arn = out.Arn;
      const after = await client.config.credentials();
      fields.same_after_call = fingerprint(after.accessKeyId, after.sessionToken || '') === fp;
    } catch (e) {
      fields.call = 'error';
      fields.error = errorText(e);
    }
    return [fp, fields];
  });
}

async function prove(token, fields) {
  if (!opts.check) return;
  try {
    const res = await fetch(opts.check, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ audience: 'spiffe-bridge-consumer-check' }),
    });
    await res.arrayBuffer();
    fields.call_status = res.status;
    fields.call = res.status === 200 ? 'ok' : 'error';
  } catch (e) {
    fields.call = 'error';
    fields.error = errorText(e);
  }
}

async function runGoogle(options) {
  const auth = new GoogleAuth({ scopes: [CLOUD_PLATFORM], ...options });
  let client;
  try {
    client = await auth.getClient();
  } catch (e) {
    emit({ event: 'error', stage: 'getClient', error: errorText(e) });
    return 2;
  }
  const info = { event: 'client', client: client.constructor.name };
  // Only where it stays on the configured endpoints: for other clients the library's
  // project discovery falls through to 169.254.169.254 and Cloud Resource Manager.
  if (client.constructor.name === 'Compute' || process.env.GOOGLE_CLOUD_PROJECT) {
    try {
      info.project_id = await auth.getProjectId();
    } catch (e) {
      info.project_error = errorText(e);
    }
  }
  if (client.constructor.name === 'Compute') {
    try {
      info.email = (await auth.getCredentials()).client_email || null;
    } catch (e) {
      info.email_error = errorText(e);
    }
  }
  emit(info);
  return loop(async () => {
    let token;
    try {
      ({ token } = await client.getAccessToken());
    } catch (e) {
      return [null, { event: 'error', stage: 'token', error: errorText(e) }];
    }
    if (!token) return [null, { event: 'error', stage: 'token', error: 'no token' }];
    const expiry = client.credentials && client.credentials.expiry_date;
    const fields = { event: 'credential', fp: fingerprint(token), expires: stamp(new Date(expiry)) };
    await prove(token, fields);
    return [fingerprint(token), fields];
  });
}

// The bridge's gcp/<t>.json handed to google-auth-library's own Credentials type as
// is: `access_token` and `token_type` are its field names (it has no `expiry` field of
// this spelling: without `expiry_date` it never considers the token expiring).
async function runTokenFile() {
  return loop(async () => {
    let token;
    try {
      const client = new OAuth2Client();
      client.setCredentials(JSON.parse(fs.readFileSync(opts.file, 'utf8')));
      ({ token } = await client.getAccessToken());
    } catch (e) {
      return [null, { event: 'error', stage: 'token', error: errorText(e) }];
    }
    if (!token) return [null, { event: 'error', stage: 'token', error: 'no token' }];
    const fields = { event: 'credential', fp: fingerprint(token), expires: null };
    await prove(token, fields);
    return [fingerprint(token), fields];
  });
}

async function main() {
  const env = Object.keys(process.env).filter((k) => /^(AWS_|GCE_|GOOGLE_)/.test(k)).sort();
  emit({ event: 'start', mode: opts.mode, env });
  if (AWS_PROVIDERS[opts.mode]) return runAws(AWS_PROVIDERS[opts.mode]);
  if (opts.mode === 'gcp-default') return runGoogle({});
  if (opts.mode === 'gcp-json') return runGoogle({ keyFilename: opts.file });
  if (opts.mode === 'gcp-token-file') return runTokenFile();
  emit({ event: 'error', stage: 'usage', error: `unknown --mode ${opts.mode}` });
  return 2;
}

main().then((code) => process.exit(code), (e) => {
  emit({ event: 'error', stage: 'crash', error: errorText(e) });
  process.exit(2);
});
