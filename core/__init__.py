"""The foundation under the scheduler and the workers: settings, the broker connection and
its keys, worker presence, the input store, atomic file publishing, process supervision
and error lines. It imports neither `scheduler`, `worker`, `kinds` nor `db`."""
