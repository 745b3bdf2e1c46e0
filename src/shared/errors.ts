/** Errors carry a stable `code` so that callers and tests match codes, not message text. */
export class GdpError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'GdpError';
  }
}
