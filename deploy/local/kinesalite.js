// kinesalite's CLI has no host option: start it here, bound to loopback only.
require('kinesalite')({ createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 1000 })
  .listen(Number(process.env.KINESALITE_PORT || 4567), '127.0.0.1');
