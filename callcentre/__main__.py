from callcentre.cli import main

main()
