"""One thin launcher per chapter section; each has a typed config and a main()."""
