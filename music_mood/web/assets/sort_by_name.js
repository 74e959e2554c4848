(files) => [files && [...files].sort((a, b) => (a.orig_name || a.path).localeCompare(
  b.orig_name || b.path, undefined, {numeric: true, sensitivity: 'base'}))]
