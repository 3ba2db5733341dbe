"""Images in, shards out, batches to the trainer: sources (folders, archives, MNIST, StackedMNIST) converted to
checksummed WebDataset tar shards, and the loader that streams them, split by rank and resumable mid-epoch."""
