from gentool.cli.app import main

main()
