/** Just enough protobuf wire-format reading for SentencePiece's ModelProto. Bounds-checked. */
import { medllavaError } from '../errors.js';

export interface Field {
  number: number;
  wireType: number;
  /** varint value (wire type 0) */
  varint?: bigint;
  /** length-delimited bytes (wire type 2) */
  bytes?: Uint8Array;
  /** fixed32 (wire type 5) */
  fixed32?: DataView;
}

export function* fields(buf: Uint8Array, what: string): Generator<Field> {
  let pos = 0;
  const fail = (why: string): never => {
    throw medllavaError('E_FORMAT', `${what}: invalid protobuf at byte ${pos}: ${why}`);
  };
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (pos >= buf.length) fail('truncated varint');
      const b = buf[pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
    }
    return fail('varint longer than 10 bytes');
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const field: Field = { number: key >>> 3, wireType: key & 7 };
    switch (field.wireType) {
      case 0: field.varint = varint(); break;
      case 1: if (pos + 8 > buf.length) fail('truncated fixed64'); pos += 8; break;
      case 2: {
        const len = varint();
        if (len > BigInt(buf.length - pos)) fail(`length ${len} runs past the end`);
        field.bytes = buf.subarray(pos, pos + Number(len));
        pos += Number(len);
        break;
      }
      case 5:
        if (pos + 4 > buf.length) fail('truncated fixed32');
        field.fixed32 = new DataView(buf.buffer, buf.byteOffset + pos, 4);
        pos += 4;
        break;
      default: fail(`unsupported wire type ${field.wireType}`);
    }
    yield field;
  }
}

/** A protobuf wire-format writer for the same subset. */
export class ProtoWriter {
  private chunks: number[] = [];
  private varint(v: number | bigint) {
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      let b = Number(x & 0x7fn);
      x >>= 7n;
      if (x) b |= 0x80;
      this.chunks.push(b);
    } while (x);
  }
  uint(field: number, v: number | bigint | boolean) {
    this.varint((field << 3) | 0);
    this.varint(typeof v === 'boolean' ? (v ? 1 : 0) : v);
    return this;
  }
  float(field: number, v: number) {
    this.varint((field << 3) | 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.chunks.push(...b);
    return this;
  }
  bytes(field: number, data: Uint8Array | string) {
    const b = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    this.varint((field << 3) | 2);
    this.varint(b.length);
    for (const x of b) this.chunks.push(x);
    return this;
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}
