from bcd.cli.main import main

main()
