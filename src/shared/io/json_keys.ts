/** Where a JSON text names one key twice in an object: the key, and the keys of the objects enclosing it. */
export interface DuplicateKey {
  key: string;
  path: string[];
}

interface Frame {
  object: boolean;
  keys: Set<string>;
  /** The key this container is the value of ('[]' for an array element). */
  name: string;
  expectKey: boolean;
}

/**
 * The first key that occurs twice in one object, at any depth, of a JSON text `JSON.parse` already accepted (it
 * keeps the last value silently). Keys compare after unescaping, so "a" and "\u0061" are the same key.
 */
export function findDuplicateKey(json: string): DuplicateKey | undefined {
  const stack: Frame[] = [];
  let lastKey = '';
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    const top = stack[stack.length - 1];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const s = JSON.parse(json.slice(i, j + 1)) as string;
      i = j;
      if (top?.object && top.expectKey) {
        if (top.keys.has(s)) return { key: s, path: stack.slice(1).map((f) => f.name) };
        top.keys.add(s);
        top.expectKey = false;
        lastKey = s;
      }
    } else if (c === '{' || c === '[') {
      stack.push({ object: c === '{', keys: new Set(), name: top?.object ? lastKey : '[]', expectKey: c === '{' });
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',' && top?.object) {
      top.expectKey = true;
    }
  }
  return undefined;
}
