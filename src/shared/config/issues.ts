import { z } from 'zod';

/** One `--set key.path=value` as given, and its key path. */
export interface Override {
  /** The argument as typed, `key.path=value`: what error messages quote. */
  text: string;
  keys: string[];
}

/**
 * Edit distance between `a` and `b` counting insertions, deletions, substitutions and swaps of neighbours as one edit
 * each (optimal string alignment, the restricted Damerau-Levenshtein distance).
 */
export function editDistance(a: string, b: string): number {
  // d[i][j]: distance between the first i characters of a and the first j of b.
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The known key closest to `key` when it is a likely typo of it: at most a third of its length in edits (at least
 * one), and fewer edits than the longer of the two has characters, so that short keys (`T`, `p`) get no far-fetched
 * suggestion; undefined when none is that close.
 */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const k of known) {
    const d = editDistance(key, k);
    if (d < bestDistance && d < Math.max(key.length, k.length)) [best, bestDistance] = [k, d];
  }
  return best;
}

/** The keys of the object schema at `path` inside `schema` (through optional and default wrappers); [] if none. */
function objectKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let s: z.ZodType | undefined = schema;
  let i = 0;
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodNullable) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodObject) {
      if (i === path.length) return Object.keys(s.shape);
      s = (s.shape as Record<PropertyKey, z.ZodType | undefined>)[path[i++]];
    } else return [];
  }
}

const startsWith = (long: readonly PropertyKey[], short: readonly PropertyKey[]) => short.length <= long.length && short.every((k, i) => long[i] === k);

/**
 * The `params` of a custom issue (refine, superRefine) that checks its key against other keys: `related` names those
 * keys, from the config's top (`data.mean`), so that the issue, reported at one key, is also traced to a `--set` of
 * the others (data.std missing is reported at data.std, but it is the --set of data.mean that brought it in).
 */
export function relatedKeys(...keys: string[]): { params: { related: string[] } } {
  return { params: { related: keys } };
}

/** The key paths an issue's check read besides its own path (relatedKeys); [] for any other issue. */
function relatedPaths(issue: z.core.$ZodIssue): string[][] {
  const related: unknown = issue.code === 'custom' ? issue.params?.related : undefined;
  return Array.isArray(related) ? related.map((k) => String(k).split('.')) : [];
}

/**
 * The `--set` an issue at `path` comes from: the last override that set that key or a section holding it (later
 * overrides overwrite earlier ones), or one of the keys its check reads (`related`); for an unknown key, also one
 * that created it on the way to a deeper key.
 */
function originOf(path: readonly PropertyKey[], overrides: readonly Override[], unknownKey: boolean, related: readonly string[][] = []): Override | undefined {
  return overrides.findLast(
    (o) => startsWith(path, o.keys) || (unknownKey && startsWith(o.keys, path)) || related.some((r) => startsWith(r, o.keys) || startsWith(o.keys, r)),
  );
}

/**
 * Formats zod issues of `schema` as "key.path: message" lines, each naming the `--set` it comes from (if any), and
 * for an unknown key the nearest key of that section; `fromOverrides` is true when every issue has such an origin.
 */
export function describeIssues(schema: z.ZodType, err: z.ZodError, overrides: readonly Override[]): { lines: string[]; fromOverrides: boolean } {
  const lines: string[] = [];
  let fromOverrides = true;
  const line = (path: readonly PropertyKey[], message: string, origin: Override | undefined, hint = '') => {
    if (!origin) fromOverrides = false;
    lines.push(`${path.length ? path.join('.') : '(top level)'}: ${message}${origin ? ` (from --set ${origin.text})` : ''}${hint}`);
  };
  for (const issue of err.issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = objectKeysAt(schema, issue.path);
      for (const key of issue.keys) {
        const near = nearestKey(key, known);
        line(issue.path, `unknown key '${key}'`, originOf([...issue.path, key], overrides, true), near ? `; did you mean '${near}'?` : '');
      }
    } else line(issue.path, issue.message, originOf(issue.path, overrides, false, relatedPaths(issue)));
  }
  return { lines, fromOverrides };
}
