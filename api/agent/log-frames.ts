/**
 * The body of `POST /v1/agent/runs/{id}/log-frames`: pieces of every log stream in the order the runner read
 * them (infra/images/pod-runner/frames.go writes it). One body holds several streams so that the stored
 * order, which the combined log and the follow show, is the order the template wrote in.
 *
 * Each frame, big-endian: [u16 name length][name][u64 offset][u32 data length][data].
 */
import { AppError, ErrorCode } from '../../core/errors.js';
import type { LogFrame, LogStream } from '../../core/db/logs.js';

export const LOG_FRAMES_TYPE = 'application/vnd.glider-gun.log-frames';

export const STREAM = /^(stdout|stderr|file:[!-~][ -~]{0,199})$/;

const HEADER_AFTER_NAME = 8 + 4;

function invalid(index: number, at: number, problem: string): AppError {
  return new AppError(ErrorCode.ValidationFailed, `log frame ${index} (at byte ${at}): ${problem}`, { frame: index, byte: at });
}

/** The frames of a body, in order; a body that is not a whole number of valid frames is refused whole. */
export function parseLogFrames(body: Buffer): LogFrame[] {
  if (body.length === 0) throw new AppError(ErrorCode.ValidationFailed, `the body holds no log frames (${LOG_FRAMES_TYPE})`);
  const frames: LogFrame[] = [];
  for (let at = 0; at < body.length; ) {
    const index = frames.length;
    if (body.length - at < 2) throw invalid(index, at, 'cut short in its stream name length');
    const nameLength = body.readUInt16BE(at);
    const nameAt = at + 2;
    if (body.length - nameAt < nameLength + HEADER_AFTER_NAME) throw invalid(index, at, `cut short: ${body.length - nameAt} bytes left for a name of ${nameLength} bytes, an offset and a length`);
    // latin1 keeps one character per byte, so a byte outside printable ASCII fails the pattern.
    const name = body.toString('latin1', nameAt, nameAt + nameLength);
    if (!STREAM.test(name)) throw invalid(index, at, `stream ${JSON.stringify(name.slice(0, 100))} is not stdout, stderr or file:<name> (printable ASCII, at most 200 characters)`);
    const offset = body.readBigUInt64BE(nameAt + nameLength);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(index, at, `offset ${offset} is too large`);
    const length = body.readUInt32BE(nameAt + nameLength + 8);
    const dataAt = nameAt + nameLength + HEADER_AFTER_NAME;
    if (body.length - dataAt < length) throw invalid(index, at, `${length} data bytes announced, ${body.length - dataAt} left`);
    frames.push({ stream: name as LogStream, offset: Number(offset), data: body.subarray(dataAt, dataAt + length) });
    at = dataAt + length;
  }
  return frames;
}

/** The body for frames: what the runner sends (the tests use it). */
export function encodeLogFrames(frames: readonly { stream: string; offset: number; data: Buffer | string }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of frames) {
    const name = Buffer.from(f.stream, 'latin1');
    const data = Buffer.from(f.data);
    const header = Buffer.alloc(2 + name.length + HEADER_AFTER_NAME);
    header.writeUInt16BE(name.length, 0);
    name.copy(header, 2);
    header.writeBigUInt64BE(BigInt(f.offset), 2 + name.length);
    header.writeUInt32BE(data.length, 2 + name.length + 8);
    parts.push(header, data);
  }
  return Buffer.concat(parts);
}
