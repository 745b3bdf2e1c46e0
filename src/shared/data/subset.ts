import { checkedIndices, type Batch, type Dataset } from './dataset.js';

/**
 * `n` sample indices (ascending) of a dataset with `labels`, every class in proportion to its share of the
 * dataset: class c gets floor(n * count_c / size) samples, and the samples still missing go one each to the
 * classes with the largest remainders (Hamilton's largest-remainder apportionment; ties to the smaller label), so
 * each class is within one sample of its exact share. Inside a class the samples are evenly spaced over its own
 * order (the middle of each of k equal runs), which spreads them over files sorted by writer, date or source.
 * Depends only on `labels` and `n`: every worker and every run draws the same subset. A dataset sorted by class
 * (MNIST's split, ImageNet's validation folders) would give a prefix of a few classes only. `n >= size`: all.
 */
export function stratifiedSubset(labels: Int32Array, n: number): Int32Array {
  const size = labels.length;
  if (n >= size) return Int32Array.from({ length: size }, (_, i) => i);
  const members = new Map<number, number[]>();
  for (let i = 0; i < size; i++) {
    const list = members.get(labels[i]);
    if (list) list.push(i);
    else members.set(labels[i], [i]);
  }
  const classes = [...members.keys()].sort((a, b) => a - b);
  // Exact integer arithmetic: n * count < 2^53 for any dataset that fits in memory.
  const take = classes.map((c) => Math.floor((n * members.get(c)!.length) / size));
  const remainder = classes.map((c) => (n * members.get(c)!.length) % size);
  let missing = n - take.reduce((a, b) => a + b, 0);
  const byRemainder = classes.map((_, k) => k).sort((a, b) => remainder[b] - remainder[a] || a - b);
  for (const k of byRemainder) {
    if (missing === 0) break;
    take[k]++;
    missing--;
  }
  const out: number[] = [];
  classes.forEach((c, k) => {
    const list = members.get(c)!;
    const m = list.length;
    for (let j = 0; j < take[k]; j++) out.push(list[Math.floor(((2 * j + 1) * m) / (2 * take[k]))]);
  });
  return Int32Array.from(out).sort();
}

/**
 * `n` samples of a dataset chosen by `stratifiedSubset` (data.test_subset: quick evaluations), renumbered 0..n-1
 * in the dataset's order. Images and augmentation come from the inner dataset with the inner sample numbers.
 */
export class SubsetDataset implements Dataset {
  readonly name: string;
  readonly labels: Int32Array;
  readonly size: number;
  /** Inner sample number of each subset sample. */
  readonly members: Int32Array;

  constructor(
    private readonly inner: Dataset,
    n: number,
  ) {
    this.members = stratifiedSubset(inner.labels, n);
    this.size = this.members.length;
    this.labels = this.members.map((k) => inner.labels[k]);
    this.name = `${inner.name}[${this.size} stratified]`;
  }
  get shape(): [number, number, number] {
    return this.inner.shape;
  }
  get numClasses(): number {
    return this.inner.numClasses;
  }
  get identity(): string | undefined {
    return this.inner.identity;
  }
  async load(indices: ArrayLike<number>, opts: { augment: boolean; seed: number }): Promise<Batch> {
    const { idx } = checkedIndices(this.name, this.labels, indices);
    return this.inner.load(
      idx.map((i) => this.members[i]),
      opts,
    );
  }
}
