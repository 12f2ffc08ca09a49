"""`python -m devops_cp ...`: the same as the `devops-cp` command (handy where scripts are not on PATH)."""

from devops_cp.cli import main

main(prog_name="devops-cp")
