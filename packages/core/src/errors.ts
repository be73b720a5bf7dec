/**
 * The one error type core throws: bad input to a parser. It names what was being parsed and the
 * offending input, so an agent, a router or a CLI can print a clear message or map it to a 400.
 */
export class ParseError extends Error {
  override readonly name = 'ParseError';

  constructor(
    /** What was being parsed: `PCI address`, `modalias`, `pci.ids`... */
    readonly subject: string,
    /** The input as given (truncated for display by the caller if needed). */
    readonly input: string,
    /** Why it was rejected, in words an operator understands. */
    readonly reason: string,
  ) {
    super(`invalid ${subject} ${JSON.stringify(input)}: ${reason}`);
  }
}

/** A problem on one line of a multi-line input; parsers collect all of them and keep the good lines. */
export interface LineError {
  /** 1-based line number. */
  line: number;
  text: string;
  message: string;
}
