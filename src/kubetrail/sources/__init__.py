"""Where audit events come from: files, directories, rotated sets and stdin."""
