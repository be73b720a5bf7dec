/**
 * Recognising a resent snapshot from its bytes, before any parse.
 *
 * Agents resend their whole inventory (~300 KB) whenever their stream restarts, and on a fleet it
 * is almost always the inventory the server already holds. The server keeps, with each snapshot it
 * stores, a hash of the frame's bytes (hosts.raw_inventory_hash); a frame whose hash is that one
 * is acknowledged for one UPDATE of the stream position, without JSON.parse, validation,
 * assessment or a canonical re-serialization (about 2.5 ms of the event loop per frame, which a
 * fleet's resends spend one after another).
 *
 * The hash covers everything of the frame after the envelope's epoch and seq except the value of
 * the first `"collectedAt"` (the snapshot's read time, new in every resend), salted with this
 * process's salt and the connection's labels. Equal hashes mean equal bytes but for that value, so
 * the content is the one this process validated, assessed and stored with the hash, whatever the
 * key order or extra members the agent sends (they were there then too). The envelope is read
 * with a strict pattern: the order core's encodeMessage writes (`type`, `epoch`, `seq`, then
 * `snapshot`), an epoch and seq as the schema allows them, a collectedAt of timestamp characters
 * only. A frame written any other way has no raw hash and always takes the full path, which stays
 * the one that validates and reports what is wrong.
 */
import { createHash, randomUUID } from 'node:crypto';
import { canonicalJson } from './ingest';

/**
 * Salt of the raw hashes, new in every server process: a raw hash only ever matches what this
 * process stored itself, so a server upgraded with new readiness rules never skips assessing a
 * host's first snapshot (the inventory hash then catches an unchanged one).
 */
const RAW_HASH_SALT = randomUUID();

/** The envelope as encodeMessage writes it, up to the snapshot object's opening brace. */
const ENVELOPE =
  /^\{"type":"snapshot","epoch":"([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})","seq":(0|[1-9][0-9]{0,15}),"snapshot":\{/;
/** Enough bytes for the longest envelope ENVELOPE matches. */
const ENVELOPE_MAX_BYTES = 160;
const COLLECTED_AT = Buffer.from('"collectedAt":"');
const QUOTE = 0x22;
/** An ISO 8601 timestamp's characters: no quote, no backslash, so the value ends at the next quote. */
const TIMESTAMP_CHARACTERS = /^[0-9A-Za-z:.+-]{0,64}$/;

export interface RawSnapshotFrame {
  epoch: string;
  seq: number;
  /** `r2:` and the salted sha256 described above. */
  hash: string;
}

/** The envelope and raw hash of a snapshot frame written as encodeMessage writes it, else null. */
export function rawSnapshotFrame(
  raw: Uint8Array,
  labels: Readonly<Record<string, string>>,
): RawSnapshotFrame | null {
  const bytes = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const envelope = ENVELOPE.exec(
    bytes.toString('latin1', 0, Math.min(bytes.length, ENVELOPE_MAX_BYTES)),
  );
  const [matched, epoch, seqText] = envelope ?? [];
  if (matched === undefined || epoch === undefined || seqText === undefined) return null;
  const seq = Number(seqText);
  if (!Number.isSafeInteger(seq)) return null;
  // latin1 maps one byte to one character, so the match's length is a byte offset.
  const body = matched.length - 1;
  const hash = createHash('sha256').update(`${RAW_HASH_SALT}\n${canonicalJson(labels)}\n`);
  const at = bytes.indexOf(COLLECTED_AT, body);
  if (at < 0) {
    hash.update(bytes.subarray(body));
  } else {
    const valueStart = at + COLLECTED_AT.length;
    const valueEnd = bytes.indexOf(QUOTE, valueStart);
    if (valueEnd < 0) return null;
    if (!TIMESTAMP_CHARACTERS.test(bytes.toString('latin1', valueStart, valueEnd))) return null;
    hash.update(bytes.subarray(body, valueStart)).update(bytes.subarray(valueEnd));
  }
  return { epoch, seq, hash: `r2:${hash.digest('hex')}` };
}
