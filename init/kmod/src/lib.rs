//! Loads kernel modules by name and by hardware modalias, from depmod's index files.
