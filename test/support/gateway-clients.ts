/**
 * Hostile and raw clients for test/integration/gateway.test.ts: any gRPC method of Temporal's services sent
 * through the gateway with a chosen certificate, raw WorkflowService calls straight to Temporal that schedule
 * activities without any workflow code, and task tokens made by hand (forged, or sealed like the gateway does).
 */
import { createHmac, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import type { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time.js';
import type * as Protos from '@temporalio/proto';
import type { Root } from 'protobufjs';

/** The SDK's generated protos (a CommonJS module whose named exports ESM cannot see). */
export const { temporal } = createRequire(import.meta.url)('@temporalio/proto') as typeof Protos;

/** The protobufjs JSON root shipped with the SDK: every method of every Temporal service it knows. */
export const protoRoot = createRequire(import.meta.url)('@temporalio/proto/protos/json-module.js') as Root;

export const WORKFLOW_SERVICE = 'temporal.api.workflowservice.v1.WorkflowService';
export const OPERATOR_SERVICE = 'temporal.api.operatorservice.v1.OperatorService';

export function methodsOf(service: string): string[] {
  return Object.keys(protoRoot.lookupService(service).methods).sort();
}

export interface CallResult {
  code: grpc.status;
  details: string;
  response?: Record<string, unknown>;
}

/** A gRPC client of the gateway that sends whatever it is told, with whatever certificate it is given. */
export class RawGatewayClient {
  private readonly client: grpc.Client;

  constructor(address: string, opts: { caPem: string; certPem?: string; keyPem?: string; serverName?: string }) {
    const credentials = grpc.credentials.createSsl(
      Buffer.from(opts.caPem),
      opts.keyPem ? Buffer.from(opts.keyPem) : null,
      opts.certPem ? Buffer.from(opts.certPem) : null,
    );
    this.client = new grpc.Client(address, credentials, { 'grpc.ssl_target_name_override': opts.serverName ?? 'localhost', 'grpc.default_authority': opts.serverName ?? 'localhost' });
  }

  call(service: string, method: string, request: Record<string, unknown> = {}, metadata: Record<string, string> = {}, timeoutMs = 10_000): Promise<CallResult> {
    const m = protoRoot.lookupService(service).methods[method];
    if (!m) throw new Error(`${service} has no method ${method}`);
    m.resolve();
    const requestType = m.resolvedRequestType!;
    const responseType = m.resolvedResponseType!;
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(
        `/${service}/${method}`,
        (value: Record<string, unknown>) => Buffer.from(requestType.encode(requestType.fromObject(value)).finish()),
        (bytes: Buffer) => responseType.toObject(responseType.decode(bytes), { longs: Number, bytes: Buffer, defaults: false }) as Record<string, unknown>,
        request,
        md,
        { deadline: Date.now() + timeoutMs },
        (err, response) => {
          if (err) resolve({ code: err.code, details: err.details });
          else resolve({ code: grpc.status.OK, details: '', ...(response ? { response } : {}) });
        },
      );
    });
  }

  /** Any path, with a body of raw bytes: for services the SDK's descriptors do not list. */
  callPath(fullPath: string, body: Buffer = Buffer.alloc(0)): Promise<CallResult> {
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(fullPath, (b: Buffer) => b, (b: Buffer) => b, body, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err) =>
        resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' }),
      );
    });
  }

  /** The channel's connectivity: one channel is one HTTP/2 connection while it stays READY. */
  state(): grpc.connectivityState {
    return this.client.getChannel().getConnectivityState(false);
  }

  close(): void {
    this.client.close();
  }
}

/** Encodes a `temporal.server.api.token.v1.Task` by hand (the server's own proto; no SDK ships it). */
export function forgeTaskToken(t: { namespaceId: string; workflowId: string; runId: string; scheduledEventId: number; attempt: number; activityId: string }): Buffer {
  const varint = (n: number) => {
    const out: number[] = [];
    for (let v = BigInt(n); ; ) {
      const byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v === 0n) {
        out.push(byte);
        return out;
      }
      out.push(byte | 0x80);
    }
  };
  const str = (field: number, s: string) => (s ? [...varint((field << 3) | 2), ...varint(Buffer.byteLength(s)), ...Buffer.from(s)] : []);
  const int = (field: number, n: number) => (n ? [...varint(field << 3), ...varint(n)] : []);
  return Buffer.from([
    ...str(1, t.namespaceId),
    ...str(2, t.workflowId),
    ...str(3, t.runId),
    ...int(4, t.scheduledEventId), // 0: "complete by id", the server looks the activity up by activity_id
    ...int(5, t.attempt),
    ...str(6, t.activityId),
  ]);
}

/**
 * The gateway's envelope (infra/images/gateway/envelope.go), made here from the key: version 0x01 | keyId |
 * expiry (8 bytes, unix seconds) | raw | HMAC-SHA256(key, nodeId | 0x00 | header | raw).
 */
export function sealToken(key: Buffer, keyId: number, nodeId: string, raw: Buffer, expiry: Date): Buffer {
  const header = Buffer.alloc(10);
  header[0] = 0x01;
  header[1] = keyId;
  header.writeBigUInt64BE(BigInt(Math.floor(expiry.getTime() / 1000)), 2);
  const mac = createHmac('sha256', key).update(nodeId).update(Buffer.from([0])).update(header).update(raw).digest();
  return Buffer.concat([header, raw, mac]);
}

/** The raw server token inside an envelope. */
export const rawOfEnvelope = (token: Buffer): Buffer => token.subarray(10, token.length - 32);

export interface ScheduledActivities {
  workflowId: string;
  runId: string;
}

/**
 * Starts a workflow and completes its first workflow task by hand with one ScheduleActivityTask command per
 * activity id, all on `taskQueue`: no workflow code, no worker, straight to Temporal.
 */
export async function scheduleActivities(
  direct: Connection,
  opts: { namespace: string; taskQueue: string; activityIds: string[]; startToCloseSeconds?: number },
): Promise<ScheduledActivities> {
  const { enums } = temporal.api;
  const workflowId = `gateway-raw-${randomUUID()}`;
  const workflowQueue = `gateway-raw-wf-${randomUUID()}`;
  const started: Protos.temporal.api.workflowservice.v1.IStartWorkflowExecutionResponse = await direct.workflowService.startWorkflowExecution({
    namespace: opts.namespace,
    workflowId,
    workflowType: { name: 'raw' },
    taskQueue: { name: workflowQueue, kind: enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
    workflowRunTimeout: msToTs('1 hour'),
    identity: 'gateway-test',
    requestId: randomUUID(),
  });
  // Temporal refuses a long poll without a deadline.
  const task = await direct.withDeadline(Date.now() + 30_000, () =>
    direct.workflowService.pollWorkflowTaskQueue({
      namespace: opts.namespace,
      taskQueue: { name: workflowQueue, kind: enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
      identity: 'gateway-test',
    }),
  );
  if (!task.taskToken?.length) throw new Error('no workflow task for the raw workflow');
  await direct.workflowService.respondWorkflowTaskCompleted({
    namespace: opts.namespace,
    taskToken: task.taskToken,
    identity: 'gateway-test',
    commands: opts.activityIds.map((activityId): Protos.temporal.api.command.v1.ICommand => ({
      commandType: enums.v1.CommandType.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK,
      scheduleActivityTaskCommandAttributes: {
        activityId,
        activityType: { name: 'raw-activity' },
        taskQueue: { name: opts.taskQueue, kind: enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
        startToCloseTimeout: msToTs((opts.startToCloseSeconds ?? 3600) * 1000),
        scheduleToCloseTimeout: msToTs('3 hours'),
      },
    })),
  });
  return { workflowId, runId: started.runId ?? '' };
}

/** The activity ids of a workflow still pending (scheduled or started, not closed). */
export async function pendingActivityIds(direct: Connection, namespace: string, execution: ScheduledActivities): Promise<string[]> {
  const d = await direct.workflowService.describeWorkflowExecution({ namespace, execution: { workflowId: execution.workflowId, runId: execution.runId } });
  return (d.pendingActivities ?? []).map((a) => a.activityId ?? '').sort();
}

/** The event types of a workflow's history, in order. */
export async function historyEventTypes(direct: Connection, namespace: string, execution: ScheduledActivities): Promise<string[]> {
  const h = await direct.workflowService.getWorkflowExecutionHistory({ namespace, execution: { workflowId: execution.workflowId, runId: execution.runId } });
  return (h.history?.events ?? []).map((e) => temporal.api.enums.v1.EventType[e.eventType ?? 0] ?? String(e.eventType));
}

/** A made-up Temporal frontend: answers the WorkflowService methods it is given and records the headers it got. */
export async function startFakeTemporal(answers: Record<string, () => Record<string, unknown>>): Promise<{ address: string; headers: grpc.Metadata[]; stop(): Promise<void> }> {
  const service = protoRoot.lookupService(WORKFLOW_SERVICE);
  const headers: grpc.Metadata[] = [];
  const definition: Record<string, grpc.MethodDefinition<Record<string, unknown>, Record<string, unknown>>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const [method, answer] of Object.entries(answers)) {
    const m = service.methods[method];
    if (!m) throw new Error(`no method ${method}`);
    m.resolve();
    const [req, res] = [m.resolvedRequestType!, m.resolvedResponseType!];
    definition[method] = {
      path: `/${WORKFLOW_SERVICE}/${method}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (v: Record<string, unknown>) => Buffer.from(req.encode(req.fromObject(v)).finish()),
      requestDeserialize: (b: Buffer) => req.toObject(req.decode(b)),
      responseSerialize: (v: Record<string, unknown>) => Buffer.from(res.encode(res.fromObject(v)).finish()),
      responseDeserialize: (b: Buffer) => res.toObject(res.decode(b)),
    };
    implementation[method] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      headers.push(call.metadata);
      callback(null, answer());
    };
  }
  const server = new grpc.Server();
  server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, headers, stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())) };
}
