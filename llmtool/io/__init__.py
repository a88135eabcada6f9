"""Input and output: records from arguments, files and stdin; tables; the output formats; the console."""
