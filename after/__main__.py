from after.cli import main

main(prog_name="after")
