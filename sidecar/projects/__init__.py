"""projects/*, conversations/*: projects group conversations and files."""
