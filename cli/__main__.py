from deepclust.cli.main import main

main()
