"""Pure decision logic: no I/O, no clock, no environment. Everything takes `now` and config."""
