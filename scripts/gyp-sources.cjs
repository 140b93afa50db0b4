// Prints the source list binding.gyp compiles: the addon without CUDA (node-gyp has no nvcc step).
const s = require('../native/sources.json');
process.stdout.write(s.core.concat(s.napi, s.nocuda).join(' '));
