/**
 * Replaces secret values in a byte stream that arrives in arbitrary pieces. Up to (longest secret - 1)
 * bytes are held back, so a value split across two pieces is still found; `end()` releases the rest.
 * The output is the same however the input was cut, which lets a resumed reader skip what was stored.
 */
export const MASK = Buffer.from('***');
/** Shorter values would mask ordinary text; they are still kept out of every other place. */
export const MIN_MASKED_LENGTH = 3;

export class Masker {
  private readonly needles: Buffer[];
  private readonly holdBack: number;
  private pending: Buffer = Buffer.alloc(0);

  constructor(values: readonly string[]) {
    const unique = [...new Set(values.filter((v) => Buffer.byteLength(v) >= MIN_MASKED_LENGTH))];
    // Longest first, so a value containing another is masked whole.
    this.needles = unique.map((v) => Buffer.from(v)).sort((a, b) => b.length - a.length);
    this.holdBack = Math.max(0, ...this.needles.map((n) => n.length - 1));
  }

  push(piece: Buffer): Buffer {
    if (this.needles.length === 0) return piece;
    const buf = Buffer.concat([this.pending, piece]);
    const { out, consumed } = this.scan(buf, Math.max(0, buf.length - this.holdBack));
    this.pending = buf.subarray(consumed);
    return out;
  }

  end(): Buffer {
    const { out } = this.scan(this.pending, this.pending.length);
    this.pending = Buffer.alloc(0);
    return out;
  }

  /** Masks matches that start before `safe`, and emits everything up to `safe` or the end of the last match. */
  private scan(buf: Buffer, safe: number): { out: Buffer; consumed: number } {
    const parts: Buffer[] = [];
    let from = 0;
    for (;;) {
      // The earliest match from here; on a tie the longest needle wins (they are sorted longest first).
      let at = -1;
      let hit: Buffer | undefined;
      for (const n of this.needles) {
        const p = buf.indexOf(n, from);
        if (p !== -1 && (at === -1 || p < at)) {
          at = p;
          hit = n;
        }
      }
      if (!hit || at >= safe) break;
      parts.push(buf.subarray(from, at), MASK);
      from = at + hit.length;
    }
    const consumed = Math.max(from, safe);
    parts.push(buf.subarray(from, consumed));
    return { out: Buffer.concat(parts), consumed };
  }
}

/** The strings to mask for a run's sensitive values (non-strings as their JSON text). */
export function secretStrings(secrets: Record<string, unknown>): string[] {
  return Object.values(secrets).map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
}
