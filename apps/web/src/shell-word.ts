/**
 * POSIX shell quoting for the commands the server prints (the agent command line, the install
 * commands). Label values are the admin's free text and end up in a command someone pastes into a
 * root shell on another host, so every word goes through here.
 */

/**
 * One word of a POSIX shell command line: left bare when it holds only characters no shell treats
 * specially, else single-quoted (a `'` inside becomes `'\''`).
 */
export function shellWord(word: string): string {
  if (/^[A-Za-z0-9_./:=@,+%-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", "'\\''")}'`;
}
