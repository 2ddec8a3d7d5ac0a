from services.carrier.app import main

main()
