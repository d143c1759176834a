from shvya.cli import main

main()
