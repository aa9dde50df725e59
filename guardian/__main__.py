from guardian.cli import entry

entry()
