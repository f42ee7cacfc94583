"""One module per measured section; each has run(ctx) -> a JSON-able dict."""

from . import backup, basebackup, local, restore, s3, ssh, sustained

# In the order they run; "micro" runs in the outer process (../micro.py).
SECTIONS = (("local", local.run), ("ssh", ssh.run), ("restore", restore.run),
            ("sustained", sustained.run), ("basebackup", basebackup.run),
            ("s3", s3.run),
            ("backup", backup.run))
