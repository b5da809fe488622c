from aliasd.cli import main

main()
