import cliProgress from 'cli-progress';

/**
 * Per-step progress: a cli-progress bar when stdout is a terminal, plain periodic lines otherwise (logs, CI, a
 * parent process reading our output).
 */
export class StepProgress {
  private bar?: cliProgress.SingleBar;
  private readonly every: number;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly log: (line: string) => void,
    tty = process.stdout.isTTY === true,
  ) {
    this.every = Math.max(1, Math.floor(total / 10));
    if (tty) {
      this.bar = new cliProgress.SingleBar(
        { format: `${label} |{bar}| {value}/{total} steps | {imgs} img/s | loss {loss}`, hideCursor: true },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, 0, { imgs: '-', loss: '-' });
    }
  }

  update(step: number, imgsPerSec: number, loss: number): void {
    const imgs = imgsPerSec >= 100 ? imgsPerSec.toFixed(0) : imgsPerSec.toPrecision(3);
    const l = loss.toFixed(4);
    if (this.bar) this.bar.update(step, { imgs, loss: l });
    else if (step === 1 || step === this.total || step % this.every === 0) this.log(`${this.label} step ${step}/${this.total}  ${imgs} img/s  loss ${l}`);
  }

  stop(): void {
    this.bar?.stop();
  }
}
