from socle.cli.main import main

main()
