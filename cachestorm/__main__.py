from cachestorm.cli.main import main

main()
