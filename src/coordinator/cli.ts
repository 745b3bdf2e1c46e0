import { main } from './main.js';

// Exit explicitly: a worker socket or timer left behind must not keep a finished run alive.
process.exit(await main(process.argv.slice(2)));
