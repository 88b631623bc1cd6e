"""hwr: the Ray-free library: Chars74K data, the VGG16 transfer model, one training run, prediction."""
