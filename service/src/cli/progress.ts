/** A progress line on stderr: a bar, counts, rate and an estimate; redrawn in place on a terminal, every 2 s otherwise. */
export function progressBar(label: string): { update(done: number, total: number, extra?: string): void; finish(): void } {
  const started = Date.now();
  const tty = process.stderr.isTTY;
  let lastPrinted = 0;
  let lastLine = "";
  return {
    update(done, total, extra = "") {
      const now = Date.now();
      const fraction = total === 0 ? 1 : Math.min(1, done / total);
      const width = 30;
      const filled = Math.round(fraction * width);
      const rate = done / Math.max(0.001, (now - started) / 1000);
      const eta = rate > 0 && total > done ? `, about ${Math.ceil((total - done) / rate)} s left` : "";
      lastLine = `${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total} (${(fraction * 100).toFixed(1)}%), ${Math.round(rate)}/s${eta}${extra}`;
      if (tty) process.stderr.write(`\r${lastLine}\x1b[K`);
      else if (now - lastPrinted >= 2_000 || done >= total) {
        process.stderr.write(`${lastLine}\n`);
        lastPrinted = now;
      }
    },
    finish() {
      if (tty && lastLine) process.stderr.write("\n");
    },
  };
}
