/** The tensor backends a user can ask for (`--backend`); apart from backend.ts so a command line lists them without loading TF.js. */
export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
