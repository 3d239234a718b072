/** A LIKE pattern's literal text: `%`, `_` and the escape character itself matched as themselves. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** `%text%`, the text taken literally: a case-insensitive substring match with ILIKE. */
export function containsPattern(text: string): string {
  return `%${escapeLike(text)}%`;
}
