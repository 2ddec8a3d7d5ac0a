from services.provider.app import main

main()
