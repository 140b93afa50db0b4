/**
 * Every rejection from medllava is an Error with one of these codes (docs/API.md has the table).
 * E_INTERNAL is medllava's own failure (a bug, or the system refusing a thread or a mapping), never
 * the caller's: report it. E_OOM: an allocation failed.
 */
export const ERROR_CODES = [
  'E_ARGUMENT',
  'E_IO',
  'E_FORMAT',
  'E_UNSUPPORTED',
  'E_SHAPE',
  'E_IMAGE',
  'E_CONTEXT_FULL',
  'E_ABORTED',
  'E_OOM',
  'E_CUDA',
  'E_TIMEOUT',
  'E_INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface MedllavaError extends Error {
  readonly code: ErrorCode;
}

/** True when `e` is an error raised by medllava (native or TypeScript side). */
export function isMedllavaError(e: unknown): e is MedllavaError {
  if (!(e instanceof Error)) return false;
  const code: unknown = (e as Error & { code?: unknown }).code;
  return typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code);
}

/** Creates an Error carrying `.code`, the same shape the native core rejects with. */
export function medllavaError(code: ErrorCode, message: string): MedllavaError {
  const e = new Error(message) as Error & { code: ErrorCode };
  e.code = code;
  return e;
}
